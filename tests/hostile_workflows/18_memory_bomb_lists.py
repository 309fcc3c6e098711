# expect: runtime_error | MemoryError|budget|worker killed|out of memory
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        blocks = []
        for i in range(100000):
            blocks.append([i] * 900000)
        return str(len(blocks))
