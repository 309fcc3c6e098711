# expect: invalid | attribute 'cr_frame' is not allowed
import asyncio


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)

    async def run_workflow(self):
        pending = self.custom(input=self.problem, instruction="Solve.")
        frame = pending.cr_frame
        results = await asyncio.gather(pending)
        return results[0]["response"]
