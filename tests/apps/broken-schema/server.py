"""Documents GreetResponse.length as an integer but answers a string."""

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

app = FastAPI(title="schema", version="1.0.0")


class GreetRequest(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)


class GreetResponse(BaseModel):
    message: str
    length: int


@app.post("/greet", response_model=GreetResponse)
def greet(req: GreetRequest):
    message = "Hello, " + req.name
    return JSONResponse({"message": message, "length": str(len(message))})
