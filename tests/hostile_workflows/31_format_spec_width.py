# expect: invalid | format specs
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return f"{self.problem:>999999999}"
