"""PoT (program-of-thought; PAL, arXiv 2211.10435): a first analysis, then a program whose printed
result is the answer. The same code as the grammar's `Custom[plain]x1+Programmer`."""


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)
        self.programmer = operator.Programmer(llm)

    async def run_workflow(self):
        solutions = []
        result = await self.custom(input=self.problem, instruction="Solve the following problem.")
        solutions.append(result["response"])
        program = await self.programmer(problem=self.problem, analysis=solutions[0])
        solutions.append(program["output"])
        answer = program["output"]
        return answer
