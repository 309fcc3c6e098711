# expect: invalid | attribute 'format' is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return "{0.__class__.__init__.__globals__}".format(self)
