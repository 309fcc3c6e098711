# expect: invalid | __call__ must be
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def __call__(self, problem, secret):
        return problem
