# expect: invalid | private and dunder
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)

    async def run_workflow(self):
        return str(self.custom._channel)
