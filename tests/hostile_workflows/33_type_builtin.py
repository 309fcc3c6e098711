# expect: invalid | 'type' is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return str(type(self).mro())
