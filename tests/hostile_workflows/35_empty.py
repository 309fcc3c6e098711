# expect: invalid | no class Workflow
