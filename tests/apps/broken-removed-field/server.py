"""Version 2 of a greeter whose baseline (openapi-baseline.json) still promises `length`."""

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI(title="removed-field", version="2.0.0")


class GreetRequest(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)


class GreetResponse(BaseModel):
    message: str


@app.post("/greet", response_model=GreetResponse)
def greet(req: GreetRequest):
    return GreetResponse(message="Hello, " + req.name)
