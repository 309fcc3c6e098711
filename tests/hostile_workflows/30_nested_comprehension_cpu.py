# expect: runtime_error | step budget|range
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        total = sum([i * j for i in range(90000) for j in range(90000)])
        return str(total)
