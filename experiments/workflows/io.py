"""IO: the question straight to the executor, one call."""


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)

    async def run_workflow(self):
        result = await self.custom(input=self.problem, instruction="Solve the following problem.")
        return result["response"]
