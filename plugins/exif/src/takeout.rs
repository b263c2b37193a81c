//! Google Takeout's JSON sidecars: `photoTakenTime.timestamp` is Unix
//! seconds (UTC, as a string); `geoData` is 0/0 when unknown.

pub struct Takeout {
    pub taken_unix: Option<i64>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub title: Option<String>,
    pub description: Option<String>,
}

pub fn parse(text: &str) -> Option<Takeout> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let taken = &json["photoTakenTime"]["timestamp"];
    let taken_unix = taken
        .as_str()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| taken.as_i64());
    let geo = &json["geoData"];
    let (lat, lon) = (geo["latitude"].as_f64(), geo["longitude"].as_f64());
    let known = matches!((lat, lon), (Some(a), Some(b)) if a != 0.0 || b != 0.0);
    let text_of = |key: &str| {
        json[key]
            .as_str()
            .map(str::to_string)
            .filter(|s| !s.is_empty())
    };
    Some(Takeout {
        taken_unix,
        latitude: lat.filter(|_| known),
        longitude: lon.filter(|_| known),
        title: text_of("title"),
        description: text_of("description"),
    })
}
