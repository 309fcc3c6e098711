# expect: runtime_error | returned dict, not str
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)

    async def run_workflow(self):
        return await self.custom(input=self.problem, instruction="Solve it.")
