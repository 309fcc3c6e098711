# expect: invalid | Lambda is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        f = lambda: 1
        return str(f())
