# expect: invalid | attribute 'with_traceback' is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        try:
            1 / 0
        except Exception as err:
            return str(err.with_traceback(None).tb_frame)
