# expect: invalid | syntax error
class Workflow:
    def __init__(self, llm, problem)
        self.problem = problem
