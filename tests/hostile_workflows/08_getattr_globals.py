# expect: invalid | 'getattr' is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return str(getattr(self, "run_workflow"))
