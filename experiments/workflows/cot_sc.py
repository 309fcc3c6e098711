"""CoT-SC(5): five independent step-by-step answers, then self-consistency selection (ScEnsemble)."""


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)
        self.sc_ensemble = operator.ScEnsemble(llm)

    async def run_workflow(self):
        solutions = []
        for _ in range(5):
            result = await self.custom(
                input=self.problem,
                instruction="Solve the following problem. Think step by step, then state the final answer.",
            )
            solutions.append(result["response"])
        best = await self.sc_ensemble(solutions=solutions, problem=self.problem)
        return best["response"]
