# expect: invalid | dunder
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return __import__("os").popen("id").read()
