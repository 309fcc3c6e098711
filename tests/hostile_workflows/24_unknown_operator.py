# expect: invalid | operator.Shell is not an operator
class Workflow:
    def __init__(self, llm, problem):
        self.shell = operator.Shell(llm)

    async def run_workflow(self):
        return "x"
