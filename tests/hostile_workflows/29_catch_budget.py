# expect: runtime_error | budget
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        n = 0
        try:
            while n >= 0:
                n = n + 1
        except Exception:
            return "escaped the budget"
        return "done"
