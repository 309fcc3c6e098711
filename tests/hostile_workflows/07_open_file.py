# expect: invalid | 'open' is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return open("/etc/passwd").read()
