"""Routing policy, pure: model-name resolution, the catalog, classification, evidence, selection,
named routes, the route plan for one request, pricing and the answer's heuristic score."""
