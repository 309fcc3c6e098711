# expect: invalid | only class Workflow may be defined
class Solver:
    def __init__(self, llm, problem):
        self.problem = problem
