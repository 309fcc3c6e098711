# expect: invalid | 'eval' is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return eval("1+1")
