"""Routing policy, pure: the catalog, classification, evidence, selection and named routes; the plan
for one request, what a candidate can take, the cascade; pricing and the answer's heuristic score."""
