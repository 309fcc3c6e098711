"""ScoreFlow-style QA workflow: three reasoned answers, then ScEnsemble."""


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.answer_generate = operator.AnswerGenerate(llm)
        self.sc_ensemble = operator.ScEnsemble(llm)

    async def run_workflow(self):
        answers = []
        for _ in range(3):
            result = await self.answer_generate(input=self.problem)
            answers.append(result["answer"])
        best = await self.sc_ensemble(solutions=answers, problem=self.problem)
        return best["response"]
