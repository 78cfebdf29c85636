//! Route choice by listener, host and path.

use crate::config::Route;

/// Route lookup.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table.
    pub fn new(routes: &[Route]) -> RouteTable {
        RouteTable {
            routes: routes.to_vec(),
        }
    }

    /// The index of the matching route.
    pub fn find(&self, listener: &str, _host: Option<&str>, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.listener.as_deref().is_none_or(|l| l == listener) && path.starts_with(&r.path_prefix)
        })
    }
}
