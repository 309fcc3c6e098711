# expect: runtime_error | too large
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return str(9 ** 9 ** 9)
