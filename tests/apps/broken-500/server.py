"""Crashes (500) for n above 500, an input the schema allows."""

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI(title="crash", version="1.0.0")


class DoubleRequest(BaseModel):
    n: int = Field(..., ge=0, le=1000)


class DoubleResponse(BaseModel):
    value: int


@app.post("/double", response_model=DoubleResponse)
def double(req: DoubleRequest):
    if req.n > 500:
        raise RuntimeError("lookup table only goes to 500")
    return DoubleResponse(value=req.n * 2)
