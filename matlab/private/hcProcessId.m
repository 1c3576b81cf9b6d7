function pid = hcProcessId()
    % HCPROCESSID  The process id of this MATLAB or Octave session (internal).
    %   The worker started by hcStartWorker watches it and exits when this session ends. MATLAB documents
    %   no function for it: feature('getpid') is undocumented, so a release without it gives 0 (the worker
    %   then ends after its idle timeout instead).
    if hcIsOctave()
        pid = getpid();
        return
    end
    try
        pid = feature('getpid');
    catch
        pid = 0;
    end
end
