"""ScoreFlow-style code workflow: three implementations, ScEnsemble, then Test against the public examples."""


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.code_generate = operator.CustomCodeGenerate(llm)
        self.sc_ensemble = operator.ScEnsemble(llm)
        self.test = operator.Test(llm)

    async def run_workflow(self):
        solutions = []
        for _ in range(3):
            result = await self.code_generate(
                problem=self.problem,
                instruction="Implement the function. Think about edge cases before writing the code.",
            )
            solutions.append(result["response"])
        best = await self.sc_ensemble(solutions=solutions, problem=self.problem)
        checked = await self.test(problem=self.problem, solution=best["response"])
        return checked["solution"]
