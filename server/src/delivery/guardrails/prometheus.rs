//! The measurement of a Prometheus guardrail: an instant query (`GET /api/v1/query`) against
//! the configured Prometheus, reduced to the highest value among the series it returns.

use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

/// Runs `query` on the Prometheus at `base` (e.g. `http://prometheus:9090`): the highest
/// value of the series returned (`None` when there is none), or why it could not be had.
pub async fn query(http: &reqwest::Client, base: &str, query: &str) -> Result<Option<f64>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let res = http
        .get(&url)
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| format!("Prometheus at {base} did not answer: {e}"))?;
    let status = res.status();
    let answer: Answer = res
        .json()
        .await
        .map_err(|e| format!("Prometheus answered {status} with no usable body: {e}"))?;
    if answer.status != "success" {
        return Err(format!(
            "Prometheus refused the query: {}",
            answer.error.unwrap_or(answer.status)
        ));
    }
    let data = answer.data.ok_or("Prometheus answered without data")?;
    highest(&data.result_type, &data.result)
}

/// The highest value of an instant query's result (`vector` or `scalar`).
fn highest(result_type: &str, result: &Value) -> Result<Option<f64>, String> {
    let sample = |v: &Value| -> Result<f64, String> {
        v.get(1)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| format!("unreadable sample {v}"))
    };
    match result_type {
        "scalar" => sample(result).map(Some),
        "vector" => {
            let series = result.as_array().ok_or("a vector that is not a list")?;
            let mut max: Option<f64> = None;
            for s in series {
                let v = sample(s.get("value").unwrap_or(&Value::Null))?;
                // NaN (e.g. 0/0) is no evidence either way.
                if !v.is_nan() {
                    max = Some(max.map_or(v, |m| m.max(v)));
                }
            }
            Ok(max)
        }
        other => Err(format!(
            "the query returns a {other}: use an instant vector or a scalar"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_highest_series_counts_and_nan_is_ignored() {
        let v = json!([
            {"metric": {"a": "1"}, "value": [1.0, "0.25"]},
            {"metric": {"a": "2"}, "value": [1.0, "0.75"]},
            {"metric": {"a": "3"}, "value": [1.0, "NaN"]}
        ]);
        assert_eq!(highest("vector", &v), Ok(Some(0.75)));
        assert_eq!(highest("vector", &json!([])), Ok(None));
        assert_eq!(highest("scalar", &json!([1.0, "3"])), Ok(Some(3.0)));
        assert!(highest("matrix", &json!([])).is_err());
        assert!(highest("vector", &json!([{"value": [1.0, "x"]}])).is_err());
    }
}
