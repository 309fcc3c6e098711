# expect: runtime_error | ZeroDivisionError
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return str(1 / 0)
