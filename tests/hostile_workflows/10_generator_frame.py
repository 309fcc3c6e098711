# expect: invalid | attribute 'gi_frame' is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        gen = (x for x in [1])
        return str(gen.gi_frame.f_back.f_globals)
