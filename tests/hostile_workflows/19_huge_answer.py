# expect: runtime_error | characters (limit
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        text = "y" * 150000
        return text + text
