# expect: runtime_error | %-formatting
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return "%999999999d" % 1
