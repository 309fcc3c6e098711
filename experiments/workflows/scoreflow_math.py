"""ScoreFlow-style math workflow: two step-by-step answers and a program, then ScEnsemble."""


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)
        self.programmer = operator.Programmer(llm)
        self.sc_ensemble = operator.ScEnsemble(llm)

    async def run_workflow(self):
        solutions = []
        for _ in range(2):
            result = await self.custom(
                input=self.problem,
                instruction="Solve this math problem step by step. Put the final answer in \\boxed{}.",
            )
            solutions.append(result["response"])
        program = await self.programmer(problem=self.problem, analysis=solutions[0])
        solutions.append(f"The program computed \\boxed{{{program['output']}}}")
        best = await self.sc_ensemble(solutions=solutions, problem=self.problem)
        return best["response"]
