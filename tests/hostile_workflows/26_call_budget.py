# expect: runtime_error | call budget
class Workflow:
    def __init__(self, llm, problem):
        self.problem = problem
        self.custom = operator.Custom(llm)

    async def run_workflow(self):
        answer = ""
        for i in range(1000):
            result = await self.custom(input=self.problem, instruction=f"Attempt {i}")
            answer = result["response"]
        return answer
