//! Embeddings and retrieval-augmented generation over HTTP.
//!
//! - `POST /v1/embeddings`: OpenAI's shape (`input` a string or a list of
//!   strings; `encoding_format` `float` or `base64`).
//! - `GET /v1/rag/collections`: every collection and its size.
//! - `POST /v1/rag/collections/{name}/documents`: `{"documents": [{"text",
//!   "source"?}], "chunker"?}` chunks, embeds and stores them (the
//!   collection is created on first use).
//! - `POST /v1/rag/collections/{name}/query`: `{"query", "k"?}` returns the
//!   nearest passages with their scores, sources and byte offsets.
//! - `POST /v1/rag/answer`: `{"collection", "question", "k"?, ...}` retrieves,
//!   puts the passages into the prompt as numbered sources, generates with the
//!   served model (or an adapter named in `model`), and returns the answer
//!   with its `citations`: every passage the model was shown, each marked
//!   `cited` when the answer refers to it as `[n]`.
//!
//! The work behind these routes is a [`Retrieval`] the binary provides; the
//! routes answer 404 with a clear message when the server has none.

use super::error::ApiError;
use super::generate::{self, Endpoint, Job};
use super::openai::{self, PromptInput};
use super::{body_bytes, resolve_model, tokenize, AppState};
use crate::retrieval::{NewDocument, Passage, Retrieval, RetrievalError};
use crate::sampler::SamplingParams;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Most texts one embeddings request may carry (OpenAI's limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Most passages a query or an answer may ask for.
pub const MAX_K: usize = 100;
/// Default number of passages for `/v1/rag/answer`.
const DEFAULT_ANSWER_K: usize = 4;

impl From<RetrievalError> for ApiError {
    fn from(e: RetrievalError) -> Self {
        match e {
            RetrievalError::NotFound(message) => Self::NotFound {
                message,
                param: Some("collection".into()),
            },
            RetrievalError::Invalid { message, param } => Self::BadRequest {
                message,
                param: param.map(String::from),
            },
            RetrievalError::Internal(m) => Self::Internal(m),
        }
    }
}

fn retrieval(st: &AppState) -> Result<Arc<dyn Retrieval>, ApiError> {
    st.retrieval.clone().ok_or_else(|| ApiError::NotFound {
        message: "embeddings and retrieval are not enabled on this server (start `sdlab serve` with an embedding model: `--embedding-model`, after `make models`)".into(),
        param: None,
    })
}

/// Runs a blocking retrieval call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RetrievalError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("retrieval task failed: {e}")))?
        .map_err(ApiError::from)
}

fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    input: PromptInput,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    #[allow(dead_code)]
    user: Option<String>,
}

pub async fn embeddings(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(embeddings_inner(st, body).await)
}

async fn embeddings_inner(
    st: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let rag = retrieval(&st)?;
    let req: EmbeddingRequest = openai::parse(&body_bytes(&st, body)?)?;
    let name = rag.embedding_model().to_string();
    if let Some(m) = &req.model {
        let short = name.rsplit('/').next().unwrap_or(&name);
        if m != &name && m != short && m.rsplit('/').next() != Some(short) {
            return Err(ApiError::NotFound {
                message: format!(
                    "embedding model `{m}` is not served here; this server embeds with `{name}`"
                ),
                param: Some("model".into()),
            });
        }
    }
    let texts = match req.input {
        PromptInput::Text(t) => vec![t],
        PromptInput::Texts(ts) => ts,
        PromptInput::Tokens(_) | PromptInput::TokenBatches(_) => {
            return Err(ApiError::bad(
                "token-id input is not supported for embeddings; send text",
                "input",
            ))
        }
    };
    if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::bad(
            format!(
                "`input` must hold 1 to {MAX_EMBEDDING_INPUTS} texts, got {}",
                texts.len()
            ),
            "input",
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::bad(format!("`input[{i}]` is empty"), "input"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad(
                format!("`encoding_format` must be `float` or `base64`, got `{other}`"),
                "encoding_format",
            ))
        }
    };
    let dim = rag.dimension();
    if let Some(d) = req.dimensions {
        if d != dim {
            return Err(ApiError::bad(
                format!(
                    "`{name}` makes {dim}-dimensional vectors; `dimensions` {d} is not supported"
                ),
                "dimensions",
            ));
        }
    }
    let out = blocking(move || rag.embed(&texts)).await?;
    let data: Vec<serde_json::Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": { "prompt_tokens": out.tokens, "total_tokens": out.tokens },
    }))
}

pub async fn list_collections(State(st): State<Arc<AppState>>) -> Response {
    let result = async {
        let rag = retrieval(&st)?;
        let list = blocking(move || rag.collections()).await?;
        Ok(json!({ "object": "list", "data": list }))
    }
    .await;
    respond(result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentIn {
    text: String,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDocumentsRequest {
    documents: Vec<DocumentIn>,
    chunker: Option<String>,
}

pub async fn add_documents(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let rag = retrieval(&st)?;
        let req: AddDocumentsRequest = openai::parse(&body_bytes(&st, body)?)?;
        if req.documents.is_empty() {
            return Err(ApiError::bad("`documents` must not be empty", "documents"));
        }
        let mut docs = Vec::with_capacity(req.documents.len());
        for (i, d) in req.documents.into_iter().enumerate() {
            if d.text.trim().is_empty() {
                return Err(ApiError::bad(format!("`documents[{i}].text` is empty"), "documents"));
            }
            let source = d.source.unwrap_or_else(|| format!("document-{}", i + 1));
            docs.push(NewDocument { source, text: d.text });
        }
        let collection = name.clone();
        let outcome = blocking(move || rag.add_documents(&collection, &docs, req.chunker.as_deref())).await?;
        tracing::info!(collection = %name, documents = outcome.documents, chunks = outcome.chunks, "documents added");
        let mut body = serde_json::to_value(&outcome).map_err(|e| ApiError::Internal(e.to_string()))?;
        body["object"] = json!("rag.documents");
        body["collection"] = json!(name);
        Ok(body)
    }
    .await;
    respond(result)
}

fn check_k(k: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match k.unwrap_or(default) {
        k @ 1..=MAX_K => Ok(k),
        k => Err(ApiError::bad(
            format!("`k` must be between 1 and {MAX_K}, got {k}"),
            "k",
        )),
    }
}

fn check_query(text: &str, param: &'static str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad(format!("`{param}` is empty"), param));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    query: String,
    k: Option<usize>,
}

pub async fn query(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let rag = retrieval(&st)?;
        let req: QueryRequest = openai::parse(&body_bytes(&st, body)?)?;
        check_query(&req.query, "query")?;
        let k = check_k(req.k, 5)?;
        let collection = name.clone();
        let passages = blocking(move || rag.query(&collection, &req.query, k)).await?;
        Ok(json!({ "object": "list", "collection": name, "data": passages }))
    }
    .await;
    respond(result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerRequest {
    collection: String,
    question: String,
    k: Option<usize>,
    /// The served model or one of its LoRA adapters.
    model: Option<String>,
    max_tokens: Option<u32>,
    /// Default 0: greedy, so an answer is reproducible.
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stream: Option<bool>,
}

/// The instruction the model answers under.
pub const ANSWER_INSTRUCTIONS: &str = "Answer the question using only the numbered sources. \
Cite the sources you use by their numbers in square brackets, like [1]. \
If the sources do not contain the answer, say that you do not know.";

/// The prompt's user part: the numbered sources, then the question.
pub fn sources_prompt(passages: &[Passage], question: &str) -> String {
    let mut text = String::from("Sources:\n");
    for (i, p) in passages.iter().enumerate() {
        text.push_str(&format!(
            "[{}] ({})\n{}\n\n",
            i + 1,
            p.source,
            p.text.trim()
        ));
    }
    text.push_str("Question: ");
    text.push_str(question.trim());
    text
}

/// Which of `n` sources an answer cites as `[i]` (1-based), in order of
/// number.
pub fn cited_sources(answer: &str, n: usize) -> Vec<usize> {
    let mut cited = vec![false; n + 1];
    // `[1]`, and the lists `[1, 2]` and `[1][2]` models also write.
    for segment in answer.split('[').skip(1) {
        let Some((inside, _)) = segment.split_once(']') else {
            continue;
        };
        for part in inside.split(',') {
            if let Ok(i) = part.trim().parse::<usize>() {
                if (1..=n).contains(&i) {
                    cited[i] = true;
                }
            }
        }
    }
    (1..=n).filter(|&i| cited[i]).collect()
}

/// The full prompt text: the chat template when the model has one, plain
/// text otherwise.
fn answer_prompt(st: &AppState, passages: &[Passage], question: &str) -> Result<String, ApiError> {
    let user = sources_prompt(passages, question);
    match &st.template {
        Some(t) => t
            .render(
                &[
                    models::ChatMessage::new("system", ANSWER_INSTRUCTIONS.to_string()),
                    models::ChatMessage::new("user", user),
                ],
                true,
            )
            .map_err(|e| ApiError::Internal(format!("chat template: {e}"))),
        None => Ok(format!("{ANSWER_INSTRUCTIONS}\n\n{user}\nAnswer:")),
    }
}

pub async fn answer(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = generate::next_request_id("rag");
    respond(answer_inner(st, id, body).await)
}

async fn answer_inner(
    st: Arc<AppState>,
    id: String,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let rag = retrieval(&st)?;
    let req: AnswerRequest = openai::parse(&body_bytes(&st, body)?)?;
    if req.stream.unwrap_or(false) {
        return Err(ApiError::bad(
            "`/v1/rag/answer` does not stream yet; send `stream: false` (or retrieve with /query and stream /v1/chat/completions)",
            "stream",
        ));
    }
    check_query(&req.question, "question")?;
    let k = check_k(req.k, DEFAULT_ANSWER_K)?;
    let adapter = resolve_model(&st, &req.model).await?;
    let max_len = st.engine.config().max_model_len;
    let max_tokens = req.max_tokens.unwrap_or(256.min(max_len as u32 / 4).max(1));
    let (collection, question) = (req.collection.clone(), req.question.clone());
    let mut passages = blocking(move || rag.query(&collection, &question, k)).await?;
    // Fewer sources rather than a prompt over the context: drop the least
    // similar until the prompt and the answer fit.
    let prompt = loop {
        let text = answer_prompt(&st, &passages, &req.question)?;
        let ids = tokenize(&st, vec![text], "question").await?.remove(0);
        if ids.len() + max_tokens as usize <= max_len || passages.is_empty() {
            break ids;
        }
        passages.pop();
    };
    let params = SamplingParams {
        temperature: req.temperature.unwrap_or(0.0),
        top_p: req.top_p.unwrap_or(1.0),
        seed: req.seed.map(|s| s as u64),
        ..SamplingParams::default()
    };
    params.validate()?;
    let job = Job::new(
        &st,
        id.clone(),
        Endpoint::Chat,
        vec![prompt],
        "question",
        params,
        (Some(max_tokens), "max_tokens"),
        1,
    )?
    .with_adapter(adapter);
    let (mut outs, usage) = job.outputs(&st).await?;
    let out = outs.remove(0);
    let cited = cited_sources(&out.text, passages.len());
    let citations: Vec<serde_json::Value> = passages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = serde_json::to_value(p).unwrap_or_default();
            c["index"] = json!(i + 1);
            c["cited"] = json!(cited.contains(&(i + 1)));
            c
        })
        .collect();
    tracing::info!(collection = %req.collection, passages = passages.len(), cited = cited.len(), "answered");
    Ok(json!({
        "id": id,
        "object": "rag.answer",
        "created": st.created,
        "model": job.model(),
        "collection": req.collection,
        "answer": out.text,
        "finish_reason": out.finish_reason.as_str(),
        "citations": citations,
        "usage": generate::usage_json(&usage),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(source: &str, text: &str) -> Passage {
        Passage {
            id: 0,
            score: 0.5,
            source: source.into(),
            start: 0,
            end: text.len(),
            text: text.into(),
        }
    }

    #[test]
    fn sources_are_numbered_in_order() {
        let p = sources_prompt(
            &[passage("a.md", " first \n"), passage("b.md", "second")],
            " why? ",
        );
        assert_eq!(
            p,
            "Sources:\n[1] (a.md)\nfirst\n\n[2] (b.md)\nsecond\n\nQuestion: why?"
        );
    }

    #[test]
    fn citations_are_read_from_the_answer() {
        assert_eq!(cited_sources("Yes [2]. Also [1][3].", 3), vec![1, 2, 3]);
        assert_eq!(cited_sources("See [1, 3] and [9] and [x].", 3), vec![1, 3]);
        assert_eq!(cited_sources("no citation", 2), Vec::<usize>::new());
        assert_eq!(cited_sources("[0] [2", 2), Vec::<usize>::new());
        assert_eq!(cited_sources("[[2]]", 2), vec![2]);
    }
}
