# expect: invalid | async def run_workflow
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    def run_workflow(self):
        return "x"
