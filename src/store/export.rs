//! Bulk export jobs, their files and the files' chunks (`export_jobs`, `export_files`,
//! `export_chunks`). The service seals what could hold PHI before it gets here; this module only
//! moves rows.

use sqlx::Row;

use super::Conn;
use crate::fhir::instant::Micros;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    Completed,
    Failed,
}

impl JobStatus {
    fn code(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    fn parse(code: &str) -> Result<JobStatus, sqlx::Error> {
        match code {
            "running" => Ok(JobStatus::Running),
            "completed" => Ok(JobStatus::Completed),
            "failed" => Ok(JobStatus::Failed),
            other => Err(sqlx::Error::Decode(
                format!("unknown export job status `{other}`").into(),
            )),
        }
    }
}

/// One job row.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub owner: String,
    pub status: JobStatus,
    /// The kick-off URL, sealed.
    pub request: Vec<u8>,
    pub transaction_time: Micros,
    pub expires_at: Option<Micros>,
    pub error: Option<String>,
}

/// One output (or error) file of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub file_no: i64,
    pub resource_type: String,
    pub is_error: bool,
    pub count: i64,
    pub chunks: i64,
    /// The Patients the file concerns, sealed.
    pub patients: Vec<u8>,
}

pub async fn insert_job(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    request: &[u8],
    transaction_time: Micros,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO export_jobs (id, owner, status, request, transaction_time) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(owner)
        .bind(JobStatus::Running.code())
        .bind(request)
        .bind(transaction_time)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn find_job(conn: &mut Conn, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    let row = sqlx::query("SELECT id, owner, status, request, transaction_time, expires_at, error FROM export_jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| {
        Ok(JobRow {
            id: row.try_get(0)?,
            owner: row.try_get(1)?,
            status: JobStatus::parse(&row.try_get::<String, _>(2)?)?,
            request: row.try_get(3)?,
            transaction_time: row.try_get(4)?,
            expires_at: row.try_get(5)?,
            error: row.try_get(6)?,
        })
    })
    .transpose()
}

/// End a running job as `status` (with `error` for a failure). Returns false when the job is no
/// longer running (it was cancelled and deleted meanwhile).
pub async fn finish_job(
    conn: &mut Conn,
    id: &str,
    status: JobStatus,
    error: Option<&str>,
    now: Micros,
    expires_at: Micros,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("UPDATE export_jobs SET status = $1, error = $2, finished_at = $3, expires_at = $4 WHERE id = $5 AND status = $6")
        .bind(status.code())
        .bind(error)
        .bind(now)
        .bind(expires_at)
        .bind(id)
        .bind(JobStatus::Running.code())
        .execute(&mut *conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// The ids of the jobs still marked running (at start-up: the ones a stop interrupted).
pub async fn running_jobs(conn: &mut Conn) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT id FROM export_jobs WHERE status = $1")
        .bind(JobStatus::Running.code())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| row.try_get(0)).collect()
}

/// The ids of the jobs that expired before `now`.
pub async fn expired_jobs(conn: &mut Conn, now: Micros) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT id FROM export_jobs WHERE expires_at < $1")
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| row.try_get(0)).collect()
}

/// Remove a job with its files and chunks.
pub async fn delete_job(conn: &mut Conn, id: &str) -> Result<(), sqlx::Error> {
    delete_output(conn, id).await?;
    sqlx::query("DELETE FROM export_jobs WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Remove a job's files and chunks, keeping the job row (a failed job keeps its error).
pub async fn delete_output(conn: &mut Conn, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM export_chunks WHERE job_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM export_files WHERE job_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn insert_chunk(
    conn: &mut Conn,
    job_id: &str,
    file_no: i64,
    chunk_no: i64,
    key_id: i64,
    content: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO export_chunks (job_id, file_no, chunk_no, key_id, content) VALUES ($1, $2, $3, $4, $5)")
        .bind(job_id)
        .bind(file_no)
        .bind(chunk_no)
        .bind(key_id)
        .bind(content)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The sealed content of one chunk, if it exists.
pub async fn chunk(
    conn: &mut Conn,
    job_id: &str,
    file_no: i64,
    chunk_no: i64,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT content FROM export_chunks WHERE job_id = $1 AND file_no = $2 AND chunk_no = $3",
    )
    .bind(job_id)
    .bind(file_no)
    .bind(chunk_no)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| row.try_get(0)).transpose()
}

pub async fn insert_file(conn: &mut Conn, job_id: &str, file: &FileRow) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO export_files (job_id, file_no, resource_type, is_error, count, chunks, patients) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(job_id)
        .bind(file.file_no)
        .bind(&file.resource_type)
        .bind(i64::from(file.is_error))
        .bind(file.count)
        .bind(file.chunks)
        .bind(&file.patients)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A job's files, in manifest order.
pub async fn files(conn: &mut Conn, job_id: &str) -> Result<Vec<FileRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT file_no, resource_type, is_error, count, chunks, patients FROM export_files WHERE job_id = $1 ORDER BY file_no")
        .bind(job_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(FileRow {
                file_no: row.try_get(0)?,
                resource_type: row.try_get(1)?,
                is_error: row.try_get::<i64, _>(2)? != 0,
                count: row.try_get(3)?,
                chunks: row.try_get(4)?,
                patients: row.try_get(5)?,
            })
        })
        .collect()
}
