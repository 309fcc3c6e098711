# expect: runtime_error | budget|RecursionError
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    def down(self, n):
        return self.down(n + 1)

    async def run_workflow(self):
        return str(self.down(0))
