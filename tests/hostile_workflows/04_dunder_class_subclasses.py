# expect: invalid | dunder
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        classes = ().__class__.__bases__[0].__subclasses__()
        return str(classes)
