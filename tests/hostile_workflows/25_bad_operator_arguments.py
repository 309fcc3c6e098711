# expect: runtime_error | unexpected argument
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)

    async def run_workflow(self):
        result = await self.custom(prompt=self.problem)
        return result["response"]
