//! Text to vectors: the [`Embedder`] trait retrieval is written against, and
//! [`MiniLm`], the real one (all-MiniLM-L6-v2 on candle, from `models::bert`).

/// Turns texts into L2-normalized vectors of one dimension.
pub trait Embedder: Send + Sync {
    fn dim(&self) -> usize;
    /// One vector per text, in order.
    fn embed(&self, texts: &[&str]) -> crate::Result<Vec<Vec<f32>>>;
    /// [`Self::embed`], and how many tokens the model read (for usage
    /// reports); by default, whitespace-separated words.
    fn embed_counted(&self, texts: &[&str]) -> crate::Result<(Vec<Vec<f32>>, usize)> {
        let tokens = texts.iter().map(|t| t.split_whitespace().count()).sum();
        Ok((self.embed(texts)?, tokens))
    }
}

/// all-MiniLM-L6-v2 (or another sentence-transformers BERT folder) on candle:
/// 384-d unit vectors, mean-pooled over up to 256 tokens. See
/// [`models::bert::SentenceEmbedder`].
#[derive(Debug)]
pub struct MiniLm(pub models::bert::SentenceEmbedder);

impl MiniLm {
    /// Loads the model from the cache (`make models` fetches it).
    pub fn load_default() -> crate::Result<Self> {
        Ok(Self(models::bert::SentenceEmbedder::load_default()?))
    }

    /// Loads a sentence-transformers BERT folder.
    pub fn load(dir: &std::path::Path) -> crate::Result<Self> {
        Ok(Self(models::bert::SentenceEmbedder::load(dir)?))
    }

    /// Texts per forward pass (at least 1).
    pub fn with_batch_size(self, batch_size: usize) -> crate::Result<Self> {
        Ok(Self(self.0.with_batch_size(batch_size)?))
    }

    pub fn inner(&self) -> &models::bert::SentenceEmbedder {
        &self.0
    }
}

impl Embedder for MiniLm {
    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn embed(&self, texts: &[&str]) -> crate::Result<Vec<Vec<f32>>> {
        Ok(self.0.embed(texts)?)
    }

    /// Counts WordPiece tokens, `[CLS]` and `[SEP]` included, after truncation.
    fn embed_counted(&self, texts: &[&str]) -> crate::Result<(Vec<Vec<f32>>, usize)> {
        let ids = self.0.tokenize(texts)?;
        let tokens = ids.iter().map(Vec::len).sum();
        Ok((self.0.embed_ids(&ids)?, tokens))
    }
}
