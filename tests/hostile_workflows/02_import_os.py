# expect: invalid | Import is not allowed
import os


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        return os.listdir("/")[0]
