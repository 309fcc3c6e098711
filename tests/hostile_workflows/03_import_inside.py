# expect: invalid | Import is not allowed
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem

    async def run_workflow(self):
        import subprocess
        return subprocess.check_output(["id"]).decode()
