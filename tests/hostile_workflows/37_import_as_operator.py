# expect: invalid | Import is not allowed
import os as operator


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)

    async def run_workflow(self):
        return "x"
