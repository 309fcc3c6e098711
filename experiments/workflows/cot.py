"""CoT: one call that asks for step-by-step reasoning."""


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)

    async def run_workflow(self):
        result = await self.custom(
            input=self.problem,
            instruction="Solve the following problem. Think step by step, then state the final answer.",
        )
        return result["response"]
