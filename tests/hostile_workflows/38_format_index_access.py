# expect: invalid | attribute 'format' is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return "{0[0]}{1.real}".format(self.problem, 1)
