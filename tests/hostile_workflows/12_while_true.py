# expect: invalid | `while True` without a break
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        while True:
            pass
