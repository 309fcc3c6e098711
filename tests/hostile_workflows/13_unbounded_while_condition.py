# expect: runtime_error | step budget
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        n = 0
        while n >= 0:
            n = n + 1
        return str(n)
