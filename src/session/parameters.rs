//! The server parameters a session follows (client encoding, time zone, DateStyle,
//! `standard_conforming_strings`) and the
//! `application_name` it shows the client: the server knows `phigate:<user>/<name>`, the
//! client sees its own `<name>`.

use crate::protocol::encoding::ClientEncoding;
use crate::protocol::value::{Context, DateStyle};
use crate::protocol::zone::Zone;

#[derive(Debug)]
pub(super) struct Parameters {
    /// `application_name` as phigate sets it upstream, and as the client asked for it
    upstream_app_name: String,
    client_app_name: String,
    /// the application_name the client was last shown (`SHOW application_name` answers it)
    shown_app_name: String,
    /// the session's TimeZone (from the server's ParameterStatus), when phigate resolves it
    zone: Option<Zone>,
    /// the session's client encoding (from the server's ParameterStatus)
    encoding: ClientEncoding,
    /// `standard_conforming_strings` is off: plain strings take backslash escapes
    escaping: bool,
    /// the session's DateStyle (from the server's ParameterStatus)
    date_style: DateStyle,
}

impl Parameters {
    pub(super) fn new(upstream_app_name: String, client_app_name: String) -> Self {
        Self {
            shown_app_name: client_app_name.clone(),
            upstream_app_name,
            client_app_name,
            zone: None,
            encoding: ClientEncoding::Utf8,
            escaping: false,
            date_style: DateStyle::default(),
        }
    }

    /// True when the server last reported `standard_conforming_strings` off.
    pub(super) fn escaping(&self) -> bool {
        self.escaping
    }

    pub(super) fn encoding(&self) -> ClientEncoding {
        self.encoding
    }

    pub(super) fn ctx(&self) -> Context {
        Context {
            zone: self.zone,
            encoding: self.encoding,
            date_style: self.date_style,
        }
    }

    /// The application_name the client was last shown.
    pub(super) fn shown_app_name(&self) -> &str {
        &self.shown_app_name
    }

    /// Notes a parameter the server reported; returns the value the client is shown.
    pub(super) fn observe<'a>(&'a mut self, name: &str, value: &'a str) -> &'a str {
        match name {
            "client_encoding" => self.encoding = ClientEncoding::from_name(value),
            "TimeZone" => self.zone = Zone::from_setting(value),
            "DateStyle" => self.date_style = DateStyle::from_setting(value),
            "standard_conforming_strings" => self.escaping = value.eq_ignore_ascii_case("off"),
            "application_name" => {
                self.shown_app_name = self.client_value(name, value).to_owned();
                return &self.shown_app_name;
            }
            _ => {}
        }
        self.client_value(name, value)
    }

    /// The value of a ParameterStatus the client is shown.
    pub(super) fn client_value<'a>(&'a self, name: &str, value: &'a str) -> &'a str {
        if name != "application_name" {
            return value;
        }
        if value == self.upstream_app_name {
            return &self.client_app_name;
        }
        let prefix = self
            .upstream_app_name
            .strip_suffix(&self.client_app_name)
            .and_then(|p| p.strip_suffix('/'))
            .unwrap_or(&self.upstream_app_name);
        match value.strip_prefix(prefix) {
            Some("") => "",
            Some(rest) => rest.strip_prefix('/').unwrap_or(value),
            None => value,
        }
    }
}
