# expect: invalid | asyncio.get_event_loop is not allowed
import asyncio


class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        loop = asyncio.get_event_loop()
        return str(loop)
