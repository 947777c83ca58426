"""The simplest service a user would write, for bench/serving.py to compare against.

FastAPI, one handler: the user's vector times every item vector (exact
numpy scoring), argpartition for the top k. No store, no auth, no logging, no
seen-item filter: everything it leaves out only makes it faster.

    python bench/_naive.py --model REGISTRY --port 8001
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
from fastapi import FastAPI

from llm4rec.models.vectors import vector_view
from llm4rec.serving.registry import ModelRegistry


def make_app(registry: str) -> FastAPI:
    _, model = ModelRegistry(registry).load()
    view = vector_view(model)
    items = view.items  # (n_items, d)
    users = view.query(model.fit_histories(np.arange(model.n_users_)))  # (n_users, d)
    user_row = {str(u): i for i, u in enumerate(model.user_ids)}
    item_ids = [str(t) for t in model.item_ids]
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    @app.get("/v1/users/{user_id}/recommendations")
    def recommend(user_id: str, k: int = 10) -> dict:
        scores = items @ users[user_row[user_id]]
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
        return {"items": [{"item": item_ids[i], "score": float(scores[i])} for i in top]}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(make_app(args.model), host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
